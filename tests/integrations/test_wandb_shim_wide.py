"""The wider wandb shim: an unmodified wandb training script, and each call it covers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import labfolio
import labfolio.compat.wandb as wandb
from labfolio.errors import ConfigError, NoActiveRunError

# A training script exactly as written for wandb: it imports wandb itself.
UNMODIFIED_SCRIPT = textwrap.dedent('''
    import argparse
    import numpy as np
    import wandb

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args([])

    wandb.login()
    run = wandb.init(project="shim", group="exp_wide", job_type="mhc", config=args,
                     settings=wandb.Settings(start_method="thread"))
    wandb.define_metric("epoch")
    wandb.define_metric("val/*", step_metric="epoch")
    wandb.watch(None, log="all")
    step = 0
    for epoch in range(3):
        for batch in range(4):
            wandb.log({"train/loss": 1.0 / (step + 1)}, commit=False)
            wandb.log({"lr": args.lr * 0.9 ** step})
            step += 1
        grid = np.linspace(0, 1, 48).reshape(4, 4, 3)
        wandb.log({"epoch": epoch, "val/acc": 0.5 + 0.1 * epoch,
                   "val/samples": wandb.Image(grid, caption=f"epoch {epoch}")})
    table = wandb.Table(columns=["id", "pred"], data=[[0, "cat"], [1, "dog"]])
    table.add_data(2, "bird")
    wandb.log({"predictions": table, "weights": wandb.Histogram(np.arange(100.0), num_bins=10)})
    wandb.alert(title="Low accuracy", text="val/acc below 0.8", level=wandb.AlertLevel.WARN)
    with open("notes.txt", "w") as fh:
        fh.write("v1")
    wandb.save("notes.txt")
    with open("notes.txt", "w") as fh:
        fh.write("v2, changed before finish")
    with open("model.bin", "wb") as fh:
        fh.write(bytes(16))
    artifact = wandb.Artifact("model", type="model", metadata={"params": 16})
    artifact.add_file("model.bin")
    run.log_artifact(artifact)
    wandb.run.summary["best_val_acc"] = 0.7
    try:
        wandb.use_artifact("dataset:latest")
    except AttributeError as exc:
        print("unsupported:", exc)
    print(run.id)
    wandb.finish()
''')

# What `import wandb` finds: the shim, so the script above runs as it is.
LAUNCHER = ("import runpy, sys, labfolio.compat.wandb as shim; sys.modules['wandb'] = shim; "
            "runpy.run_path('train.py', run_name='__main__')")


def test_an_unmodified_wandb_training_script_lands_in_the_store(tmp_path):
    (tmp_path / "train.py").write_text(UNMODIFIED_SCRIPT)
    out = subprocess.run([sys.executable, "-c", LAUNCHER], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    unsupported, run_id = out.stdout.strip().splitlines()
    assert unsupported.startswith("unsupported: wandb.use_artifact is not supported by labfolio.compat.wandb")
    assert "wandb.watch() records nothing under labfolio" in out.stderr
    store = labfolio.open_store()
    record = store.get_run(run_id)
    assert (record.experiment, record.variant, record.seed, record.state) == ("exp_wide", "mhc", 4, "finished")
    assert record.config == {"lr": 0.1, "seed": 4}
    history = store.history(run_id)
    # commit=False keeps train/loss and lr on one step; each epoch log takes a step of its own
    batch_steps = [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13]
    assert history["train/loss"].steps.tolist() == history["lr"].steps.tolist() == batch_steps
    assert history["train/loss"].values.tolist() == [1.0 / (s + 1) for s in range(12)]
    assert history["epoch"].steps.tolist() == [4, 9, 14]
    assert history["val/acc"].steps.tolist() == [0, 1, 2]  # define_metric: plotted against epoch
    assert history["val/acc"].values.tolist() == pytest.approx([0.5, 0.6, 0.7])
    assert record.summary["best_val_acc"].value == 0.7
    [alert] = store.alerts(run_id)
    assert (alert.kind, alert.severity, alert.message) == ("user", "warning", "Low accuracy: val/acc below 0.8")
    by_kind: dict = {}  # besides these, labfolio attached the script's source at init
    for a in store.artifacts(run_id):
        by_kind.setdefault(a.kind, []).append(a)
    images = by_kind["image"]
    assert [(a.name, a.step, a.meta["caption"]) for a in images] == [
        ("val/samples.png", 0, "epoch 0"), ("val/samples.png", 1, "epoch 1"), ("val/samples.png", 2, "epoch 2")]
    from PIL import Image as PILImage

    with PILImage.open(images[0].path) as png:
        # the last pixel of linspace(0, 1, 48) as 4x4x3 floats, scaled to 0..255
        assert png.size == (4, 4) and png.getpixel((3, 3)) == (round(45 / 47 * 255), round(46 / 47 * 255), 255)
    [table] = by_kind["table"]
    assert json.loads(open(table.path).read()) == {"columns": ["id", "pred"], "data": [[0, "cat"], [1, "dog"], [2, "bird"]]}
    assert table.step == 15 and table.meta["rows"] == 3
    [histogram] = by_kind["histogram"]
    stored = json.loads(open(histogram.path).read())
    assert sum(stored["counts"]) == 100 and len(stored["bins"]) == 11
    saved = [open(a.path).read() for a in by_kind["file"] if a.name == "notes.txt"]
    assert saved == ["v1", "v2, changed before finish"]  # saved now, and again once it changed
    [model] = by_kind["model"]
    assert model.name == "model/model.bin" and model.size == 16 and model.meta["metadata"] == {"params": 16}


def test_calls_before_init_ask_for_wandb_init():
    with pytest.raises(NoActiveRunError, match=r"wandb.log\(\) before wandb.init\(\): call wandb.init\(\) first"):
        wandb.log({"a": 1.0})
    assert wandb.run is None


def test_unsupported_calls_raise_an_error_naming_the_call():
    with pytest.raises(wandb.UnsupportedWandbCall, match=r"^wandb.sweep is not supported by labfolio.compat.wandb"):
        wandb.sweep({"method": "grid"})
    run = wandb.init(project="p", mode="offline")
    with pytest.raises(AttributeError, match=r"^wandb.Run.use_artifact is not supported"):
        run.use_artifact("x")
    with pytest.raises(AttributeError, match=r"^wandb.Artifact.add_reference is not supported"):
        wandb.Artifact("data", type="dataset").add_reference("s3://bucket/x")
    assert not hasattr(wandb, "Video")  # hasattr keeps working: the error is an AttributeError
    wandb.finish()


def test_explicit_steps_follow_wandbs_commit_rules():
    run = wandb.init(project="p")
    wandb.log({"a": 1.0}, step=5)
    wandb.log({"b": 2.0}, step=5)
    wandb.log({"c": 3.0})  # joins the open step 5, then commits it
    wandb.log({"d": 4.0})
    wandb.log({"e": 5.0}, step=9, commit=True)
    wandb.log({"f": 6.0})
    run_id = run.id
    wandb.finish()
    history = labfolio.open_store().history(run_id)
    assert {k: h.steps.tolist() for k, h in history.items()} == {
        "a": [5], "b": [5], "c": [5], "d": [6], "e": [9], "f": [10]}


def test_a_step_metric_that_is_not_whole_falls_back_to_the_run_step_with_one_warning():
    run = wandb.init(project="p")
    wandb.define_metric("val_loss", step_metric="epoch")
    with pytest.warns(RuntimeWarning, match="epoch=0.5 is not a whole number"):
        wandb.log({"epoch": 0.5, "val_loss": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wandb.log({"epoch": 2, "val_loss": 0.5})
    run_id = run.id
    wandb.finish()
    assert labfolio.open_store().history(run_id)["val_loss"].steps.tolist() == [0, 2]


def test_nested_dicts_text_and_arrays_are_logged_the_wandb_way(tmp_path):
    run = wandb.init(project="p")
    wandb.log({"train": {"loss": 0.5, "acc": np.float32(0.25)}, "phase": "warmup"})
    image = wandb.Image(np.zeros((3, 2, 5)))  # CxHxW, like a torch image tensor
    wandb.log({"masks": [image, image]})
    run_id = run.id
    wandb.finish()
    store = labfolio.open_store()
    assert sorted(store.history(run_id)) == ["train.acc", "train.loss"]
    assert store.get_run(run_id).summary["phase"].value == "warmup"
    names = sorted(a.name for a in store.artifacts(run_id) if a.kind == "image")
    assert names == ["masks_0.png", "masks_1.png"]
    from PIL import Image as PILImage

    with PILImage.open(store.artifacts(run_id)[-1].path) as png:
        assert png.size == (5, 2)


def test_bad_media_and_arguments_get_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"wandb.Image got an array of shape \(2, 2, 2, 2\)"):
        wandb.Image(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ConfigError, match="has 1 values for 2 columns"):
        wandb.Table(columns=["a", "b"]).add_data(1)
    with pytest.raises(ConfigError, match="no such file"):
        wandb.Image(str(tmp_path / "missing.png"))
    wandb.init(project="p")
    with pytest.raises(ConfigError, match="wandb.alert level 'LOUD'"):
        wandb.alert("t", "x", level="LOUD")
    with pytest.raises(ConfigError, match="wandb.log\\(\\) takes a dict"):
        wandb.log([1, 2])
    wandb.finish()


def test_disabled_mode_accepts_every_call_and_stores_nothing(tmp_path):
    run = wandb.init(project="p", mode="disabled")
    wandb.define_metric("val/*", step_metric="epoch")
    wandb.log({"x": 1.0, "img": wandb.Image(np.zeros((2, 2))), "t": wandb.Table(columns=["a"])})
    wandb.alert("t", "x")
    (tmp_path / "f.txt").write_text("x")
    assert wandb.save(str(tmp_path / "f.txt")) == []
    run.finish()
    assert wandb.run is None and labfolio.open_store().list_runs() == []
