"""TensorBoard import on event files written in the test by torch's own SummaryWriter."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from . import require

require("tensorboard")
torch = require("torch")
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

import labfolio  # noqa: E402
from labfolio.cli_import import import_app  # noqa: E402
from labfolio.errors import ConfigError  # noqa: E402
from labfolio.integrations.tensorboard import import_tensorboard  # noqa: E402

LOSSES = [2.5, 1.25, 0.7, 0.3, 0.1]  # shortest decimals of float32 values: they survive exactly
runner = CliRunner()


def _write_run(folder, *, losses=LOSSES, hparams=None, texts=(), extras=False):
    writer = SummaryWriter(str(folder))
    for step, loss in enumerate(losses):
        writer.add_scalar("train/loss", loss, step)
        if extras:
            writer.add_scalars("grad", {"enc": step * 2.0, "dec": step * 3.0}, step)
    for step, text in texts:
        writer.add_text("notes", text, step)
    if extras:
        writer.add_image("sample", np.zeros((3, 4, 4), dtype=np.float32), 0)
        writer.add_histogram("weights", np.arange(10.0), 0)
    if hparams is not None:
        writer.add_hparams(hparams, {"hparam/acc": 0.9})
    writer.close()


def test_scalars_hparams_and_text_from_one_writer_become_one_run(tmp_path):
    _write_run(tmp_path / "logs" / "baseline", hparams={"lr": 0.1, "opt": "adam", "bs": 32, "seed": 3},
               texts=[(0, "first **note**"), (3, "lr too high?")], extras=True)
    [result] = import_tensorboard(tmp_path / "logs")
    assert result.imported and result.skipped == {"images tags": 1, "histograms tags": 1}
    store = labfolio.open_store()
    record = store.get_run(result.run_id)
    assert (record.experiment, record.variant, record.name, record.seed) == ("logs", "baseline", "baseline", 3)
    assert record.config == {"lr": 0.1, "opt": "adam", "bs": 32, "seed": 3}
    assert record.notes == "**notes** (step 0): first **note**\n\n**notes** (step 3): lr too high?"
    history = store.history(result.run_id)
    assert sorted(history) == ["grad/dec", "grad/enc", "train/loss"]
    assert history["train/loss"].steps.tolist() == [0, 1, 2, 3, 4]
    assert history["train/loss"].values.tolist() == LOSSES
    assert history["grad/dec"].values.tolist() == [0.0, 3.0, 6.0, 9.0, 12.0]
    assert record.summary["hparam/acc"].value == 0.9
    assert record.state == "finished" and record.started_at <= record.ended_at
    external = record.provenance["external"]
    assert external["tracker"] == "tensorboard" and external["source"] == str((tmp_path / "logs" / "baseline").resolve())
    assert record.point_count == 15


def test_each_event_folder_is_its_own_run(tmp_path):
    _write_run(tmp_path / "study" / "regular", losses=[1.0, 0.5])
    _write_run(tmp_path / "study" / "mhc", losses=[0.75, 0.25, 0.125])
    results = import_tensorboard(tmp_path / "study", experiment="cifar_004", tags=["imported"])
    store = labfolio.open_store()
    records = {store.get_run(r.run_id).variant: store.get_run(r.run_id) for r in results}
    assert sorted(records) == ["mhc", "regular"]
    assert all(r.experiment == "cifar_004" and r.tags == ["imported"] for r in records.values())
    assert store.history(records["mhc"].run_id)["train/loss"].values.tolist() == [0.75, 0.25, 0.125]
    assert [e["name"] for e in store.experiments()] == ["cifar_004"]


def test_importing_the_same_files_again_writes_nothing_even_after_a_move(tmp_path):
    _write_run(tmp_path / "logs" / "a")
    first = import_tensorboard(tmp_path / "logs")
    again = import_tensorboard(tmp_path / "logs")
    shutil.move(tmp_path / "logs", tmp_path / "moved")
    moved = import_tensorboard(tmp_path / "moved", experiment="logs")
    assert [r.imported for r in first + again + moved] == [True, False, False]
    assert first[0].run_id == again[0].run_id == moved[0].run_id
    store = labfolio.open_store()
    assert len(store.list_runs()) == 1 and store.get_run(first[0].run_id).point_count == len(LOSSES)


def test_a_folder_without_event_files_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no TensorBoard event files \(events.out.tfevents.\*\) under"):
        import_tensorboard(tmp_path / "empty")
    with pytest.raises(ConfigError, match="does not exist"):
        import_tensorboard(tmp_path / "nowhere")


def test_the_import_command_reports_each_run_and_skips_known_ones(tmp_path):
    _write_run(tmp_path / "logs" / "base")
    app = typer.Typer()
    app.add_typer(import_app, name="import")
    first = runner.invoke(app, ["import", "tensorboard", str(tmp_path / "logs"), "-e", "exp1"])
    assert first.exit_code == 0, first.output
    run_id = labfolio.open_store().list_runs()[0].run_id
    source = (tmp_path / "logs" / "base").resolve()
    assert first.output.splitlines() == [f"imported {run_id}: 5 point(s) from {source}",
                                         "1 run(s) imported, 0 already in the store."]
    second = runner.invoke(app, ["import", "tensorboard", str(tmp_path / "logs")])
    assert second.output.splitlines() == [f"already imported: {run_id} (from {source})",
                                          "0 run(s) imported, 1 already in the store."]
    missing = runner.invoke(app, ["import", "tensorboard", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "Error:" in missing.output and "does not exist" in missing.output
    assert "Traceback" not in missing.output
