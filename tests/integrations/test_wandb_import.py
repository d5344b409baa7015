"""W&B import: offline runs made here by the real wandb package, and CSV/JSON history exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import typer
from typer.testing import CliRunner

from . import require

require("wandb")
pd = require("pandas")

import labfolio  # noqa: E402
from labfolio.cli_import import import_app  # noqa: E402
from labfolio.errors import ConfigError  # noqa: E402
from labfolio.integrations.wandb_import import import_wandb  # noqa: E402

STEPS = 1500  # enough history to span many 32 KiB blocks of the run file
runner = CliRunner()

OFFLINE_SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    import wandb

    exit_code = int(sys.argv[1])
    run = wandb.init(project="hc-study", group="cifar_004", job_type="mhc", name="mhc-seed7",
                     config={"lr": 0.1, "seed": 7, "model": {"depth": 4}}, tags=["w1"],
                     notes="offline run")
    run.define_metric("val/*", step_metric="epoch")
    for step in range(%d):
        run.log({"train/loss": 1.0 / (step + 1), "opt": {"lr": 0.1 * 0.999 ** step}})
        if step %% 500 == 499:
            run.log({"epoch": step // 500, "val/acc": 0.5 + step / 10000})
    run.log({"sample": wandb.Image(np.full((4, 4, 3), 200, dtype=np.uint8), caption="grey")})
    run.alert(title="loss spike", text="train/loss jumped", level=wandb.AlertLevel.WARN)
    run.summary["test/acc"] = 0.875
    run.config.update({"epochs": 3})
    print(run.id)
    run.finish(exit_code=exit_code)
''' % STEPS)


def _offline_run(folder, exit_code: int = 0):
    """Make a real W&B offline run under ``folder``; returns (its wandb/ dir, its id)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "train.py"
    script.write_text(OFFLINE_SCRIPT)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(folder), "WANDB_SILENT": "true",
           "WANDB_CONFIG_DIR": str(folder / "config"), "WANDB_CACHE_DIR": str(folder / "cache"),
           "WANDB_DATA_DIR": str(folder / "data"), "WANDB_DISABLE_GIT": "true"}
    env.pop("WANDB_API_KEY", None)
    out = subprocess.run([sys.executable, str(script), str(exit_code)], capture_output=True, text=True,
                         cwd=folder, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return folder / "wandb", out.stdout.split()[-1]


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    return _offline_run(tmp_path_factory.mktemp("wandb_ok"))


def test_an_offline_run_brings_config_summary_history_and_its_wandb_id(offline_run):
    wandb_dir, wandb_id = offline_run
    [result] = import_wandb(wandb_dir)
    assert result.imported and result.run_id == f"wandb_{wandb_id}"
    store = labfolio.open_store()
    record = store.get_run(result.run_id)
    assert (record.project, record.experiment, record.variant, record.name) == ("hc-study", "cifar_004", "mhc", "mhc-seed7")
    assert (record.seed, record.tags, record.notes, record.state) == (7, ["w1"], "offline run", "finished")
    assert record.config == {"lr": 0.1, "seed": 7, "model": {"depth": 4}, "epochs": 3}
    external = record.provenance["external"]
    assert (external["tracker"], external["id"], external["project"]) == ("wandb", wandb_id, "hc-study")
    history = store.history(result.run_id)
    loss = history["train/loss"]
    epochs = {499, 999, 1499}
    # wandb gives each log() call its own step: the val logs sit between the training steps
    assert loss.steps.tolist() == [s + sum(1 for e in epochs if e < s) for s in range(STEPS)]
    assert loss.values.tolist() == [1.0 / (s + 1) for s in range(STEPS)]  # JSON keeps every digit
    assert history["opt.lr"].values[-1] == 0.1 * 0.999 ** (STEPS - 1)
    # define_metric("val/*", step_metric="epoch"): val/acc is stored against the epoch
    assert history["val/acc"].steps.tolist() == [0, 1, 2]
    assert history["val/acc"].values.tolist() == [0.5 + s / 10000 for s in sorted(epochs)]
    assert record.summary["test/acc"].value == 0.875
    assert [(a.kind, a.severity, a.message) for a in store.alerts(result.run_id)] == [
        ("user", "warning", "loss spike: train/loss jumped")]
    [image] = store.artifacts(result.run_id)
    assert (image.kind, image.name, image.meta["key"]) == ("image", "sample.png", "sample")
    assert image.path.endswith(".png") and os.path.getsize(image.path) == image.size


def test_importing_a_run_again_writes_nothing(offline_run):
    wandb_dir, wandb_id = offline_run
    run_folder = next(p for p in wandb_dir.iterdir() if p.name.startswith("offline-run-"))
    first = import_wandb(wandb_dir)  # the wandb/ folder: its latest-run link is the same run
    again = import_wandb(run_folder)
    again_file = import_wandb(next(run_folder.glob("run-*.wandb")))
    assert [r.imported for r in first + again + again_file] == [True, False, False]
    store = labfolio.open_store()
    assert [r.run_id for r in store.list_runs()] == [f"wandb_{wandb_id}"]
    assert store.get_run(f"wandb_{wandb_id}").summary["train/loss"].count == STEPS


def test_a_nonzero_exit_is_failed_and_a_cut_off_log_is_crashed(tmp_path):
    wandb_dir, wandb_id = _offline_run(tmp_path / "failing", exit_code=3)
    [failed] = import_wandb(wandb_dir)
    record = labfolio.open_store().get_run(failed.run_id)
    assert (record.state, record.exit_reason) == ("failed", "exit code 3")
    # The same log cut off mid-record, as when the writer is killed: what precedes the cut
    # comes in, the run is crashed, and a warning says where reading stopped.
    run_file = next(wandb_dir.glob("offline-run-*/run-*.wandb"))
    cut = tmp_path / "cut" / "offline-run-x" / run_file.name.replace(wandb_id, "cut")
    cut.parent.mkdir(parents=True)
    data = run_file.read_bytes()
    cut.write_bytes(data[: _inside_a_record(data, len(data) // 2)])
    store = labfolio.open_store(tmp_path / "other_store")
    with pytest.warns(RuntimeWarning, match="truncated record"):
        [crashed] = import_wandb(cut.parent, store)
    record = store.get_run(crashed.run_id)
    assert record.state == "crashed" and "no exit record" in record.exit_reason
    loss = store.history(crashed.run_id)["train/loss"]
    assert 100 < len(loss.steps) < STEPS
    assert loss.values.tolist() == [1.0 / (s + 1) for s in range(len(loss.steps))]


def _inside_a_record(data: bytes, near: int) -> int:
    """A byte offset inside the payload of the record that holds `near`, so that cutting the
    file there always leaves a partial record (a cut on a record boundary is a complete log)."""
    import struct

    position, block = 7, 32 * 1024  # the ':W&B' file header, then LevelDB log blocks
    while True:
        room = block - position % block
        if room < 7:
            position += room
            continue
        _, length, _ = struct.unpack_from("<IHB", data, position)
        start = position + 7
        if start + length > near and length > 2:
            return start + length // 2
        position = start + length


def _history_table():
    """A frame shaped like wandb's ``run.history()``: _step, _runtime, _timestamp, metrics."""
    return pd.DataFrame({
        "_step": [0, 1, 2, 3], "_runtime": [0.5, 1.0, 1.5, 2.0],
        "_timestamp": [1.7e9, 1.7e9 + 1, 1.7e9 + 2, 1.7e9 + 3],
        "train/loss": [2.0, 1.5, None, 0.75], "val/acc": [None, 0.6, None, 0.7],
    })


def test_csv_and_json_history_exports_become_runs(tmp_path):
    frame = _history_table()
    files = tmp_path / "files"
    files.mkdir()
    frame.to_csv(tmp_path / "history.csv", index=False)
    frame.to_json(tmp_path / "history.json", orient="records")
    with open(files / "wandb-history.jsonl", "w") as fh:  # an online run's files/ folder
        for row in frame.to_dict("records"):
            fh.write(json.dumps({k: v for k, v in row.items() if v == v}) + "\n")
    (files / "config.yaml").write_text("wandb_version: 1\nlr:\n  desc: null\n  value: 0.01\nseed:\n  value: 2\n")
    (files / "wandb-summary.json").write_text(json.dumps({"train/loss": 0.75, "best_acc": 0.7}))
    (tmp_path / "api_export.json").write_text(json.dumps({
        "id": "abc123", "name": "from-api", "project": "p", "entity": "lab", "group": "g",
        "config": {"lr": 0.02}, "summary": {"final": 1.0}, "history": frame.to_dict("records")}))
    store = labfolio.open_store()
    for source in ("history.csv", "history.json", "files", "api_export.json"):
        [result] = import_wandb(tmp_path / source)
        history = store.history(result.run_id)
        assert history["train/loss"].steps.tolist() == [0, 1, 3], source  # empty cells: no point
        assert history["train/loss"].values.tolist() == [2.0, 1.5, 0.75], source
        assert history["val/acc"].steps.tolist() == [1, 3], source
        assert history["val/acc"].times.tolist() == [1.7e9 + 1, 1.7e9 + 3], source
    files_run = store.get_run(import_wandb(tmp_path / "files")[0].run_id)
    assert files_run.config == {"lr": 0.01, "seed": 2} and files_run.seed == 2
    assert files_run.summary["best_acc"].value == 0.7 and files_run.summary["train/loss"].override is None
    api_run = store.get_run("wandb_abc123")
    assert (api_run.experiment, api_run.name, api_run.config) == ("g", "from-api", {"lr": 0.02})
    assert api_run.provenance["external"]["url"] == "https://wandb.ai/lab/p/runs/abc123"
    assert len(store.list_runs()) == 4  # the repeated import of files/ wrote nothing


def test_a_chart_csv_export_gives_one_run_per_plotted_run(tmp_path):
    path = tmp_path / "chart.csv"
    path.write_text("Step,base - train/loss,base - train/loss__MIN,base - train/loss__MAX,mhc - train/loss\n"
                    "0,2.0,1.9,2.1,2.2\n10,1.0,0.9,1.1,\n20,0.5,0.4,0.6,0.4\n")
    results = import_wandb(path, experiment="chart")
    store = labfolio.open_store()
    by_name = {store.get_run(r.run_id).name: store.history(r.run_id)["train/loss"] for r in results}
    assert sorted(by_name) == ["base", "mhc"]
    assert by_name["base"].steps.tolist() == [0, 10, 20] and by_name["base"].values.tolist() == [2.0, 1.0, 0.5]
    assert by_name["mhc"].steps.tolist() == [0, 20] and by_name["mhc"].values.tolist() == [2.2, 0.4]


def test_the_import_command_reports_runs_and_errors_clearly(tmp_path, offline_run):
    wandb_dir, wandb_id = offline_run
    app = typer.Typer()
    app.add_typer(import_app, name="import")
    result = runner.invoke(app, ["import", "wandb", str(wandb_dir), "--experiment", "renamed"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"imported wandb_{wandb_id}: {2 * STEPS + 6} point(s) from ")
    assert lines[-1] == "1 run(s) imported, 0 already in the store."
    assert labfolio.open_store().get_run(f"wandb_{wandb_id}").experiment == "renamed"
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["import", "wandb", str(tmp_path / "empty")])
    assert empty.exit_code == 1 and "Traceback" not in empty.output
    assert " ".join(empty.output.split()) == (f"Error: {tmp_path / 'empty'} holds no W&B run: expected "
                                              "run-*.wandb, */run-*.wandb or wandb-history.jsonl")
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(ConfigError, match="history exports are .csv, .json or .jsonl"):
        import_wandb(tmp_path / "notes.txt")
