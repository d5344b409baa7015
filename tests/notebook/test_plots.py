"""Plots: PNGs next to the notes, deterministic bytes, redrawn only when their runs change."""

from __future__ import annotations

import numpy as np
import pytest

from labfolio.notebook import write_vault
from labfolio.store import Batch

from .conftest import T0, add_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_learning_curves_and_the_lr_schedule_are_drawn_and_embedded(study_store, tmp_path):
    vault = tmp_path / "vault"
    report = write_vault(study_store, vault, root=tmp_path)
    assert sorted(report.plots_drawn) == [
        "experiments/vit_001/plots/curve_train_loss.png", "experiments/vit_001/plots/lr_schedule.png",
        "experiments/vit_002/plots/curve_train_loss.png", "experiments/vit_002/plots/lr_schedule.png"]
    for path in report.plots_drawn:
        assert (vault / path).read_bytes().startswith(PNG_SIGNATURE)
    note = (vault / "experiments/vit_001/experiment.md").read_text(encoding="utf-8")
    assert "![[experiments/vit_001/plots/curve_train_loss.png]]" in note
    assert "![[experiments/vit_001/plots/lr_schedule.png]]" in note


def test_the_same_runs_give_the_same_png_bytes(study_store, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    write_vault(study_store, first, root=tmp_path)
    write_vault(study_store, second, root=tmp_path)
    for png in sorted(first.rglob("*.png")):
        assert png.read_bytes() == (second / png.relative_to(first)).read_bytes()


def test_a_plot_is_redrawn_only_when_its_runs_change(study_store, tmp_path):
    vault = tmp_path / "vault"
    write_vault(study_store, vault, root=tmp_path)
    again = write_vault(study_store, vault, root=tmp_path)
    assert again.plots_drawn == [] and again.plots_kept == 4
    add_run(study_store, "vit_002_baseline_s7", experiment="vit_002", variant="baseline", seed=7,
            config={"lr": 0.05}, start=T0 + 99_000, acc=0.7)
    changed = write_vault(study_store, vault, root=tmp_path)
    assert sorted(changed.plots_drawn) == ["experiments/vit_002/plots/curve_train_loss.png",
                                           "experiments/vit_002/plots/lr_schedule.png"]


def test_embedding_projections_come_from_run_artifacts(study_store, tmp_path):
    points = tmp_path / "embedding.npz"
    rng = np.random.default_rng(0)
    np.savez(points, embeddings=rng.normal(size=(60, 8)), labels=np.arange(60) % 3)
    image = tmp_path / "tsne_projection.png"
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1, 1))
    figure.add_subplot(1, 1, 1).plot([0, 1], [0, 1])
    figure.savefig(image)
    for name, path, kind in (("embedding.npz", points, "file"), ("tsne_projection.png", image, "image")):
        study_store.write_batch(Batch(run_id="vit_001_mhc_s0", events=[
            {"type": "artifact", "name": name, "kind": kind, "path": str(path), "is_reference": True,
             "sha256": None, "size": path.stat().st_size, "time": T0}]))
    vault = tmp_path / "vault"
    report = write_vault(study_store, vault, root=tmp_path)
    assert "experiments/vit_001/plots/embeddings.png" in report.plots_drawn
    assert (vault / "experiments/vit_001/plots/embeddings.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "![[experiments/vit_001/plots/embeddings.png]]" in (vault / "experiments/vit_001/experiment.md").read_text(
        encoding="utf-8")


def test_without_plots_no_png_is_written_and_no_embed_is_left(study_store, tmp_path):
    vault = tmp_path / "vault"
    write_vault(study_store, vault, plots=False, root=tmp_path)
    assert not list(vault.rglob("*.png"))
    assert "![[" not in (vault / "experiments/vit_001/experiment.md").read_text(encoding="utf-8")


@pytest.fixture()
def legend_labels(monkeypatch) -> list[str]:
    """Every curve legend label drawn while the test runs."""
    from matplotlib.axes import Axes

    labels: list[str] = []
    original = Axes.legend

    def recording_legend(self, *args, **kwargs):
        labels.extend(self.get_legend_handles_labels()[1])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "legend", recording_legend)
    return labels


def test_a_curve_legend_counts_the_runs_that_did_not_finish(study_store, tmp_path, legend_labels):
    labels = legend_labels
    write_vault(study_store, tmp_path / "vault", root=tmp_path)
    # vit_002's baseline has two finished seeds and one still running; vit_001's all finished
    assert "baseline (n=3, 1 unfinished)" in labels
    assert "mhc (n=3)" in labels


def test_a_curve_shows_each_seed_once_the_attempt_the_results_count_or_else_the_newest(tmp_path, legend_labels):
    from labfolio.store import open_store

    labels = legend_labels
    store = open_store()
    for seed in range(2):
        # a short first attempt of each seed, then the full-length rerun
        add_run(store, f"base_short_s{seed}", experiment="e", variant="baseline", seed=seed,
                config={"epochs": 4, "seed": seed}, start=T0 + seed, steps=10, acc=0.5)
        add_run(store, f"base_s{seed}", experiment="e", variant="baseline", seed=seed,
                config={"epochs": 40, "seed": seed}, start=T0 + 100 + seed, steps=40, acc=0.7)
        # mhc: both attempts killed, so the newest of each seed stands for it
        add_run(store, f"mhc_short_s{seed}", experiment="e", variant="mhc", seed=seed,
                config={"epochs": 4, "seed": seed}, start=T0 + seed, steps=10, state="killed")
        add_run(store, f"mhc_s{seed}", experiment="e", variant="mhc", seed=seed,
                config={"epochs": 40, "seed": seed}, start=T0 + 100 + seed, steps=30, state="killed")
    write_vault(store, tmp_path / "vault", root=tmp_path)
    assert "baseline (n=2)" in labels and "mhc (n=2, 2 unfinished)" in labels
